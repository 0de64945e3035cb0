//! Who someone is: password hashing (`password`), badges, our signed JWTs (`badge`), and the
//! opaque refresh tokens that get new badges (`refresh`). All are pure and take the time and
//! configuration as arguments, so they test natively.

pub mod badge;
pub mod password;
pub mod refresh;
