//! The fields of a payload struct and their types, read from its own `Deserialize` impl:
//! a deserializer that answers `deserialize_struct` with every field the derive names
//! (after `rename`s) and records what each field's type asks for (`deserialize_string`,
//! `deserialize_i64`, `deserialize_option`, …). So the schemas of the derived events are
//! taken from the structs the handlers serialize, not written a second time beside them.

use serde::de::value::{BorrowedStrDeserializer, Error};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};

/// What a field holds, as its Rust type deserializes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    /// `String`.
    Str,
    /// `bool`.
    Bool,
    /// `i64` (any JSON integer of that range).
    I64,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `f64`.
    F64,
    /// `Option<T>`: may be absent or `null`.
    Opt(Box<Ty>),
    /// A map with string keys (`BTreeMap<String, T>`).
    Map(Box<Ty>),
}

/// The fields of a struct, in declaration order, or why they cannot be described.
pub type Traced = Result<Vec<(&'static str, Ty)>, Error>;

/// The fields of `T` (a struct with named fields) in declaration order.
pub fn fields<T: DeserializeOwned>() -> Traced {
    let mut out = vec![];
    T::deserialize(Top { out: &mut out })?;
    Ok(out)
}

fn unsupported(what: &str) -> Error {
    de::Error::custom(format!(
        "a payload struct field of a type the catalog cannot describe ({what})"
    ))
}

struct Top<'a> {
    out: &'a mut Vec<(&'static str, Ty)>,
}

impl<'de> Deserializer<'de> for Top<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(unsupported("not a struct with named fields"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Fields {
            fields,
            next: 0,
            out: self.out,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Every field once, each value probed.
struct Fields<'a> {
    fields: &'static [&'static str],
    next: usize,
    out: &'a mut Vec<(&'static str, Ty)>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.fields.get(self.next) {
            None => Ok(None),
            Some(name) => seed
                .deserialize(BorrowedStrDeserializer::<Error>::new(name))
                .map(Some),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = self.fields[self.next];
        let mut ty = None;
        let v = seed.deserialize(Probe { ty: &mut ty })?;
        self.out.push((name, ty.ok_or_else(|| unsupported(name))?));
        self.next += 1;
        Ok(v)
    }
}

/// Records the type a value asks for and hands it a neutral value of that type.
struct Probe<'a> {
    ty: &'a mut Option<Ty>,
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(unsupported("self-describing or unsupported"))
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        *self.ty = Some(Ty::Str);
        v.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        *self.ty = Some(Ty::Bool);
        v.visit_bool(false)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        *self.ty = Some(Ty::I64);
        v.visit_i64(0)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        *self.ty = Some(Ty::U32);
        v.visit_u32(0)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        *self.ty = Some(Ty::U64);
        v.visit_u64(0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        *self.ty = Some(Ty::F64);
        v.visit_f64(0.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let mut inner = None;
        let out = v.visit_some(Probe { ty: &mut inner })?;
        *self.ty = Some(Ty::Opt(Box::new(
            inner.ok_or_else(|| unsupported("option"))?,
        )));
        Ok(out)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let mut entry = OneEntry {
            key: None,
            value: None,
            done: false,
        };
        let out = v.visit_map(&mut entry)?;
        match (entry.key, entry.value) {
            (Some(Ty::Str), Some(t)) => {
                *self.ty = Some(Ty::Map(Box::new(t)));
                Ok(out)
            }
            _ => Err(unsupported("a map without string keys")),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u128 f32 char bytes byte_buf unit unit_struct newtype_struct
        seq tuple tuple_struct struct enum identifier ignored_any
    }
}

/// A map of one entry whose key and value are probed.
struct OneEntry {
    key: Option<Ty>,
    value: Option<Ty>,
    done: bool,
}

impl<'de> MapAccess<'de> for &mut OneEntry {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        seed.deserialize(Probe { ty: &mut self.key }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(Probe {
            ty: &mut self.value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        a: String,
        #[serde(rename = "bee")]
        b: Option<u32>,
        c: std::collections::BTreeMap<String, i64>,
        d: f64,
        e: bool,
    }

    #[test]
    fn fields_and_types_come_from_the_derive() {
        assert_eq!(
            fields::<Sample>().unwrap(),
            vec![
                ("a", Ty::Str),
                ("bee", Ty::Opt(Box::new(Ty::U32))),
                ("c", Ty::Map(Box::new(Ty::I64))),
                ("d", Ty::F64),
                ("e", Ty::Bool),
            ]
        );
        assert!(fields::<Vec<String>>().is_err());
        assert!(fields::<serde_json::Value>().is_err());
    }
}
