//! Who someone is: password hashing (`password`) and badges, our signed JWTs (`badge`).
//! Both are pure and take the time and configuration as arguments, so they test natively.

pub mod badge;
pub mod password;
