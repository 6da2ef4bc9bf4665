//! A small snapshot format for `HashMap<String, String>`, in place of the seed's
//! `rkyv::to_bytes` / `rkyv::from_bytes` (rkyv is not a dependency of this workspace).
//!
//! Layout: the entry count (`u64` LE), then per entry the key and the value, each as a
//! length (`u32` LE) and UTF-8 bytes. Entries are written in the map's iteration order, as
//! a serializer of the `HashMap` itself would (so two maps with the same entries may give
//! different bytes; lockstep's conformance suite compares the state, not the bytes, and
//! notes the difference). Decoding rejects short input, bad UTF-8, duplicate keys and
//! trailing bytes.

use std::collections::HashMap;

/// Serialises the map.
pub fn to_bytes(data: &HashMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len() * 16);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for (k, v) in data {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// Deserialises what [`to_bytes`] wrote.
pub fn from_bytes(mut input: &[u8]) -> Result<HashMap<String, String>, String> {
    let count = u64::from_le_bytes(take(&mut input, 8)?.try_into().unwrap_or_default());
    // Each entry takes at least 8 bytes: a count beyond that is damage, not a huge map.
    if count > (input.len() / 8) as u64 {
        return Err(format!(
            "entry count {count} does not fit in {} bytes",
            input.len()
        ));
    }
    let mut data = HashMap::with_capacity(count as usize);
    for i in 0..count {
        let key = string(&mut input).map_err(|e| format!("entry {i}: key: {e}"))?;
        let value = string(&mut input).map_err(|e| format!("entry {i}: value: {e}"))?;
        if data.insert(key, value).is_some() {
            return Err(format!("entry {i}: duplicate key"));
        }
    }
    if !input.is_empty() {
        return Err(format!("{} trailing bytes", input.len()));
    }
    Ok(data)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if input.len() < n {
        return Err(format!("truncated: {} bytes left, {n} needed", input.len()));
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn string(input: &mut &[u8]) -> Result<String, String> {
    let len = u32::from_le_bytes(take(input, 4)?.try_into().unwrap_or_default()) as usize;
    let bytes = take(input, len)?;
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let mut m = HashMap::new();
        m.insert("a".to_string(), "1".to_string());
        m.insert("bb".to_string(), "22".to_string());
        let bytes = to_bytes(&m);
        assert_eq!(from_bytes(&bytes).unwrap(), m);
        assert_eq!(
            from_bytes(&to_bytes(&HashMap::new())).unwrap(),
            HashMap::new()
        );
        assert!(from_bytes(&bytes[..bytes.len() / 2]).is_err());
        assert!(from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(from_bytes(&long).is_err());
        assert!(from_bytes(b"").is_err());
    }
}
