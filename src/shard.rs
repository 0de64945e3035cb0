//! Which of a fixed set of Durable Objects holds a key: FNV-1a of the key's bytes, stable
//! across builds and platforms (a change would move keys to other objects and lose their state).

/// The object, among `shards`, that holds `key`.
pub fn index(key: &str, shards: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_pinned_and_spreads_keys_over_every_shard() {
        assert_eq!(
            ["alice", "bob", "carol"].map(|k| index(k, 16)),
            [7, 4, 2],
            "pinned: a change moves keys to other objects"
        );
        let used: std::collections::HashSet<u32> =
            (0..1000).map(|i| index(&format!("key{i}"), 16)).collect();
        assert_eq!(used.len(), 16);
        assert!((0..1000).all(|i| index(&format!("k{i}"), 7) < 7));
    }
}
