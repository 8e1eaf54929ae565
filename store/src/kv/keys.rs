//! Keys in an encoding whose byte order is the key order, for engines that compare keys as
//! bytes (PostgreSQL's `bytea`). redb compares typed keys itself, so its own encodings need not
//! sort as bytes (a `u128` is little-endian there); each key type here converts both ways.

/// A table key fleetmq uses: redb's key type plus its byte-ordered form.
pub trait Key: redb::Key + 'static {
    /// The byte-ordered encoding of `key`: `a < b` exactly when `ordered(a) < ordered(b)`.
    fn ordered(key: &Self::SelfType<'_>) -> Vec<u8>;
    /// The redb encoding of the key `ordered` encodes; `None` when it is not one.
    fn from_ordered(ordered: &[u8]) -> Option<Vec<u8>>;
}

impl Key for u128 {
    fn ordered(key: &u128) -> Vec<u8> {
        key.to_be_bytes().to_vec()
    }

    fn from_ordered(ordered: &[u8]) -> Option<Vec<u8>> {
        let n = u128::from_be_bytes(ordered.try_into().ok()?);
        Some(<u128 as redb::Value>::as_bytes(&n).to_vec())
    }
}

impl Key for &'static [u8] {
    fn ordered(key: &&[u8]) -> Vec<u8> {
        key.to_vec()
    }

    fn from_ordered(ordered: &[u8]) -> Option<Vec<u8>> {
        Some(ordered.to_vec())
    }
}

impl Key for &'static str {
    fn ordered(key: &&str) -> Vec<u8> {
        key.as_bytes().to_vec()
    }

    fn from_ordered(ordered: &[u8]) -> Option<Vec<u8>> {
        std::str::from_utf8(ordered).ok()?;
        Some(ordered.to_vec())
    }
}

/// `(text, number)` keys: the escaped text, then the number big-endian.
macro_rules! text_then_number {
    ($number:ty) => {
        impl Key for (&'static str, $number) {
            fn ordered((text, n): &(&str, $number)) -> Vec<u8> {
                let mut out = escaped(text);
                out.extend_from_slice(&n.to_be_bytes());
                out
            }

            fn from_ordered(ordered: &[u8]) -> Option<Vec<u8>> {
                let (text, rest) = unescaped(ordered)?;
                let n = <$number>::from_be_bytes(rest.try_into().ok()?);
                Some(<(&str, $number) as redb::Value>::as_bytes(&(
                    text.as_str(),
                    n,
                )))
            }
        }
    };
}

text_then_number!(u128);
text_then_number!(u64);

/// A string that is not the last part of a key: each 0 byte written `00 ff`, then `00 01`, so
/// a string sorts before every longer string it starts (and the part after it never decides
/// between two different strings).
fn escaped(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    for &b in text.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 1]);
    out
}

/// The string [`escaped`] wrote at the start of `bytes`, and what follows it.
fn unescaped(bytes: &[u8]) -> Option<(String, &[u8])> {
    let mut text = Vec::new();
    let mut i = 0;
    loop {
        match (bytes.get(i)?, bytes.get(i + 1)) {
            (0, Some(0xff)) => text.push(0),
            (0, Some(1)) => return Some((String::from_utf8(text).ok()?, &bytes[i + 2..])),
            (0, _) => return None,
            (&b, _) => {
                text.push(b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_the_same<K: Key>(keys: &[K::SelfType<'_>]) {
        let mut by_redb: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| K::as_bytes(k).as_ref().to_vec())
            .collect();
        by_redb.sort_by(|a, b| K::compare(a, b));
        let mut by_bytes: Vec<Vec<u8>> = keys.iter().map(|k| K::ordered(k)).collect();
        by_bytes.sort();
        let back: Vec<Vec<u8>> = by_bytes
            .iter()
            .map(|o| K::from_ordered(o).expect("decodes"))
            .collect();
        assert_eq!(back, by_redb);
    }

    #[test]
    fn byte_order_is_key_order_and_decodes_to_redbs_encoding() {
        sorted_the_same::<u128>(&[0, 1, 255, 256, u128::MAX, 1 << 64, 7 << 100]);
        sorted_the_same::<&[u8]>(&[b"", b"a", b"ab", b"a\0", b"b", &[0xff, 0]]);
        sorted_the_same::<&str>(&["", "a", "ab", "b", "é", "a\0b"]);
        sorted_the_same::<(&str, u128)>(&[
            ("", 5),
            ("a", u128::MAX),
            ("a", 0),
            ("a\0", 0),
            ("a\0b", 1),
            ("ab", 0),
            ("b", 3),
        ]);
        sorted_the_same::<(&str, u64)>(&[("x", 2), ("x", 1), ("", u64::MAX), ("xy", 0)]);
    }

    #[test]
    fn malformed_ordered_keys_are_refused_not_decoded() {
        assert_eq!(u128::from_ordered(&[1, 2, 3]), None);
        assert_eq!(<&str>::from_ordered(&[0xff, 0xfe]), None);
        assert_eq!(<(&str, u128)>::from_ordered(b"abc"), None);
        assert_eq!(<(&str, u128)>::from_ordered(&[b'a', 0, 7, 1]), None);
        assert_eq!(<(&str, u64)>::from_ordered(&[b'a', 0, 1, 9]), None);
    }
}
