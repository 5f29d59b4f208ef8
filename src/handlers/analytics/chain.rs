//! The audit hash chain read back: the link function, decoding the log's records and
//! verifying them (`astra-bus audit verify` runs [`verify_chain`]'s checks on what it reads).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// `SHA-256(prev_hex ‖ record)` as 64 lowercase hex characters: the link the script
/// computes for a record appended after the record whose hash is `prev_hex` (`""` for
/// the first record).
pub fn chain_hash(prev_hex: &str, record: &[u8]) -> String {
    crate::handler::chain_link(prev_hex, record)
}

/// Which part of an audit record failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainField {
    /// The record's `prev_hex` is not the previous record's hash (a record was removed,
    /// inserted or reordered before it, or its `prev_hex` was edited).
    Prev,
    /// The record's `hash_hex` is not `SHA-256(prev_hex ‖ record)` (the record or its
    /// hash was edited).
    Hash,
    /// The last record's hash is not the stored head (records were removed at the end,
    /// or the head was edited).
    Head,
}

impl fmt::Display for ChainField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChainField::Prev => "prev_hash",
            ChainField::Hash => "hash",
            ChainField::Head => "head",
        })
    }
}

/// The first broken link of an audit chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {index}: {field} expected {expected:?}, found {found:?}")]
pub struct ChainBreak {
    /// 0-based position of the record in the log (its `LINDEX`); for [`ChainField::Head`],
    /// the number of records.
    pub index: u64,
    /// What did not match.
    pub field: ChainField,
    /// The value the chain requires there.
    pub expected: String,
    /// The value found.
    pub found: String,
}

/// Verifies an audit chain given its records `(prev_hex, hash_hex, record)` in log
/// order: the first record's `prev_hex` must be `""`, each next one's must equal the
/// previous `hash_hex`, and each `hash_hex` must equal [`chain_hash`]`(prev_hex,
/// record)`. Returns the number of records, or the first broken link.
pub fn verify_chain<I: IntoIterator<Item = (String, String, Vec<u8>)>>(
    records: I,
) -> Result<u64, ChainBreak> {
    verify_links(records).map(|(n, _)| n)
}

/// [`verify_chain`], then checks that the last record's hash is `head` (the value of
/// [`audit_head_key`](super::audit_head_key); `None` or `""` when the chain is empty), which also catches
/// records removed from the end.
pub fn verify_chain_with_head<I: IntoIterator<Item = (String, String, Vec<u8>)>>(
    records: I,
    head: Option<&str>,
) -> Result<u64, ChainBreak> {
    let (n, last) = verify_links(records)?;
    let head = head.unwrap_or("");
    if head != last {
        return Err(ChainBreak {
            index: n,
            field: ChainField::Head,
            expected: head.to_string(),
            found: last,
        });
    }
    Ok(n)
}

fn verify_links<I: IntoIterator<Item = (String, String, Vec<u8>)>>(
    records: I,
) -> Result<(u64, String), ChainBreak> {
    let mut prev = String::new();
    let mut n = 0u64;
    for record in records {
        prev = check_link(n, prev, record)?;
        n += 1;
    }
    Ok((n, prev))
}

/// Checks record `index` `(prev_hex, hash_hex, record)` of a chain whose previous record's
/// hash is `prev` (`""` before the first): its `prev_hex` must be `prev` and its
/// `hash_hex` [`chain_hash`]`(prev_hex, record)`. Returns its hash, which the next record
/// must name as its `prev_hex`.
pub fn check_link(
    index: u64,
    prev: String,
    (prev_hex, hash_hex, record): (String, String, Vec<u8>),
) -> Result<String, ChainBreak> {
    let broken = |field, expected, found| ChainBreak {
        index,
        field,
        expected,
        found,
    };
    if prev_hex != prev {
        return Err(broken(ChainField::Prev, prev, prev_hex));
    }
    let computed = chain_hash(&prev_hex, &record);
    if hash_hex != computed {
        return Err(broken(ChainField::Hash, computed, hash_hex));
    }
    Ok(hash_hex)
}

/// A MessagePack str or bin, as bytes.
struct StrOrBin(Vec<u8>);

impl<'de> Deserialize<'de> for StrOrBin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrOrBin, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrBin;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a MessagePack str or bin")
            }
            fn visit_str<E>(self, v: &str) -> Result<StrOrBin, E> {
                Ok(StrOrBin(v.as_bytes().to_vec()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<StrOrBin, E> {
                Ok(StrOrBin(v.to_vec()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The elements of a MessagePack array of str/bin.
struct Items(Vec<Vec<u8>>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Items, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Items;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a MessagePack array [prev_hex, hash_hex, record]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Items, A::Error> {
                let mut v = vec![];
                while let Some(StrOrBin(x)) = a.next_element()? {
                    if v.len() == 3 {
                        return Err(de::Error::invalid_length(4, &self));
                    }
                    v.push(x);
                }
                Ok(Items(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes one element of [`audit_log_key`](super::audit_log_key): the MessagePack array
/// `[prev_hex, hash_hex, record]`, each element a str or a bin (Lua's cmsgpack writes
/// strings as str; other writers may use bin). The two hashes must be UTF-8; nothing may
/// follow the array.
pub fn decode_log_entry(bytes: &[u8]) -> Result<(String, String, Vec<u8>), String> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    let Items(items) = Items::deserialize(&mut de).map_err(|e| format!("audit log entry: {e}"))?;
    let used = de.position();
    if used != bytes.len() as u64 {
        return Err(format!(
            "audit log entry: {} trailing bytes after the array",
            bytes.len() as u64 - used
        ));
    }
    let [prev, hash, record]: [Vec<u8>; 3] = items.try_into().map_err(|v: Vec<Vec<u8>>| {
        format!(
            "audit log entry: array of {} elements, expected 3 [prev_hex, hash_hex, record]",
            v.len()
        )
    })?;
    let text = |name: &str, b: Vec<u8>| {
        String::from_utf8(b).map_err(|_| format!("audit log entry: {name} is not UTF-8"))
    };
    Ok((text("prev_hex", prev)?, text("hash_hex", hash)?, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid chain of `n` records.
    fn chain(n: usize) -> Vec<(String, String, Vec<u8>)> {
        let mut out = vec![];
        let mut prev = String::new();
        for i in 0..n {
            let record = format!("{{\"n\":{i}}}").into_bytes();
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(prev.as_bytes());
            h.update(&record);
            let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            out.push((prev.clone(), hash.clone(), record));
            prev = hash;
        }
        out
    }

    #[test]
    fn chain_hash_is_sha256_of_prev_hex_then_record() {
        // FIPS 180-2 test vector: SHA-256("abc").
        assert_eq!(
            chain_hash("", b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // "ab" ‖ "c" hashes the same bytes.
        assert_eq!(chain_hash("ab", b"c"), chain_hash("", b"abc"));
    }

    #[test]
    fn a_good_chain_verifies() {
        assert_eq!(verify_chain(chain(5)), Ok(5));
        assert_eq!(verify_chain(Vec::new()), Ok(0));
        let c = chain(5);
        let head = c[4].1.clone();
        assert_eq!(verify_chain_with_head(c, Some(&head)), Ok(5));
        assert_eq!(verify_chain_with_head(Vec::new(), None), Ok(0));
    }

    #[test]
    fn a_tampered_record_breaks_its_own_link() {
        let mut c = chain(5);
        c[2].2 = b"{\"n\":99}".to_vec();
        let err = verify_chain(c.clone()).unwrap_err();
        assert_eq!(err.index, 2);
        assert_eq!(err.field, ChainField::Hash);
        assert_eq!(err.found, c[2].1);
        assert_eq!(err.expected, chain_hash(&c[2].0, b"{\"n\":99}"));
        assert!(err.to_string().contains("record 2: hash"), "{err}");
    }

    #[test]
    fn a_tampered_hash_is_caught_there_or_at_the_next_link() {
        let good = chain(5);
        let mut c = good.clone();
        c[1].1 = "0".repeat(64);
        let err = verify_chain(c).unwrap_err();
        assert_eq!((err.index, err.field), (1, ChainField::Hash));
        assert_eq!(err.expected, good[1].1);
        assert_eq!(err.found, "0".repeat(64));
        // A forger who recomputes record 1's hash after editing it is caught by record 2.
        let mut c = good.clone();
        c[1].2 = b"forged".to_vec();
        c[1].1 = chain_hash(&c[1].0, b"forged");
        let err = verify_chain(c.clone()).unwrap_err();
        assert_eq!((err.index, err.field), (2, ChainField::Prev));
        assert_eq!(err.expected, c[1].1);
        assert_eq!(err.found, good[1].1);
        // Upper-case hex is not the canonical form.
        let mut c = good.clone();
        c[0].1 = c[0].1.to_uppercase();
        assert_eq!(verify_chain(c).unwrap_err().field, ChainField::Hash);
        // The first record must start from "".
        let mut c = good;
        c[0].0 = "x".into();
        let err = verify_chain(c).unwrap_err();
        assert_eq!(
            (err.index, err.field, err.expected.as_str()),
            (0, ChainField::Prev, "")
        );
    }

    #[test]
    fn a_deleted_record_breaks_the_next_link() {
        let good = chain(5);
        let mut c = good.clone();
        c.remove(2);
        let err = verify_chain(c).unwrap_err();
        assert_eq!(err.index, 2);
        assert_eq!(err.field, ChainField::Prev);
        assert_eq!(err.expected, good[1].1);
        assert_eq!(err.found, good[2].1);
        // Deleting the first record.
        let mut c = good.clone();
        c.remove(0);
        assert_eq!(verify_chain(c).unwrap_err().index, 0);
        // Deleting the last record is only visible against the head.
        let mut c = good.clone();
        c.pop();
        assert_eq!(verify_chain(c.clone()), Ok(4));
        let err = verify_chain_with_head(c, Some(&good[4].1)).unwrap_err();
        assert_eq!((err.index, err.field), (4, ChainField::Head));
        assert_eq!(err.expected, good[4].1);
        assert_eq!(err.found, good[3].1);
        // Swapping two records.
        let mut c = good;
        c.swap(1, 2);
        assert_eq!(verify_chain(c).unwrap_err().index, 1);
    }

    #[test]
    fn log_entries_decode_from_str_or_bin() {
        let (prev, hash) = ("", "ab".repeat(32));
        let record = b"{\"n\":0}".to_vec();
        // As Lua's cmsgpack writes it: three str.
        let strs = rmp_serde::to_vec(&(prev, &hash, "{\"n\":0}")).unwrap();
        assert_eq!(
            decode_log_entry(&strs),
            Ok((prev.to_string(), hash.clone(), record.clone()))
        );
        // Three bin.
        let bins = rmp_serde::to_vec(&(
            serde_bytes::Bytes::new(b""),
            serde_bytes::Bytes::new(hash.as_bytes()),
            serde_bytes::Bytes::new(&record),
        ))
        .unwrap();
        assert_eq!(bins[1], 0xc4, "bin 8 marker");
        assert_eq!(
            decode_log_entry(&bins),
            Ok((String::new(), hash.clone(), record.clone()))
        );
        // A record that is not UTF-8, in a str (Lua strings are bytes).
        let raw = [0x93, 0xa0, 0xa1, b'x', 0xa2, 0xff, 0xfe];
        assert_eq!(
            decode_log_entry(&raw),
            Ok((String::new(), "x".to_string(), vec![0xff, 0xfe]))
        );
        // Decoded entries feed the verifier.
        let entries: Vec<Vec<u8>> = chain(3)
            .into_iter()
            .map(|(p, h, r)| rmp_serde::to_vec(&(p, h, serde_bytes::ByteBuf::from(r))).unwrap())
            .collect();
        let decoded: Result<Vec<_>, _> = entries.iter().map(|e| decode_log_entry(e)).collect();
        assert_eq!(verify_chain(decoded.unwrap()), Ok(3));
    }

    #[test]
    fn malformed_log_entries_are_errors() {
        let two = rmp_serde::to_vec(&("a", "b")).unwrap();
        assert!(decode_log_entry(&two).unwrap_err().contains("2 elements"));
        let four = rmp_serde::to_vec(&("a", "b", "c", "d")).unwrap();
        assert!(decode_log_entry(&four).is_err());
        let int = rmp_serde::to_vec(&("a", 1, "c")).unwrap();
        assert!(decode_log_entry(&int).is_err());
        let mut trailing = rmp_serde::to_vec(&("a", "b", "c")).unwrap();
        trailing.push(0xc0);
        assert!(
            decode_log_entry(&trailing)
                .unwrap_err()
                .contains("trailing")
        );
        assert!(decode_log_entry(&[0xc1]).is_err());
        assert!(decode_log_entry(&[]).is_err());
        let bad_hash = [0x93, 0xa0, 0xc4, 0x01, 0xff, 0xa0];
        assert!(
            decode_log_entry(&bad_hash)
                .unwrap_err()
                .contains("hash_hex")
        );
    }
}
