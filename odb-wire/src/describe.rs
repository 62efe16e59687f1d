//! Structural descriptions of stored values, so that tools can decode field values without the
//! Rust types that wrote them.
//!
//! A field value is the bincode encoding (standard configuration: little endian, variable-length
//! integers) of a serde value. A [`TypeDesc`] says which serde shape a field has; with it,
//! [`decode_value`] turns the stored bytes back into a [`Value`], and [`encode_text`] encodes a
//! value typed on a command line (for index lookups). Both follow the byte format of
//! [`crate::encode_exact`], which writes the values; the tests check them against it.
//!
//! Descriptions are advisory: a client may send none (older clients do not), and a type the
//! describing code cannot see through is [`TypeDesc::Opaque`], whose values tools show as bytes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The serde shape of a field's values.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum TypeDesc {
    /// `bool`.
    Bool,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64` (and `usize`).
    U64,
    /// `u128`.
    U128,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64` (and `isize`).
    I64,
    /// `i128`.
    I128,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`.
    Char,
    /// `String` and `str`.
    String,
    /// Byte strings serialized as bytes (`bytes::Bytes`, `serde_bytes`).
    Bytes,
    /// `()`.
    Unit,
    /// `Option<T>`.
    Option(Box<TypeDesc>),
    /// `Vec<T>`, slices, sets: a length, then the elements.
    Seq(Box<TypeDesc>),
    /// Maps: a length, then key and value pairs.
    Map(Box<TypeDesc>, Box<TypeDesc>),
    /// Tuples and fixed-size arrays: the elements, without a length.
    Tuple(Vec<TypeDesc>),
    /// A struct (named, tuple or unit struct).
    Struct {
        /// The Rust type's name.
        name: String,
        /// The fields, in serialization order.
        fields: Fields,
    },
    /// An enum: a variant index, then the variant's fields.
    Enum {
        /// The Rust type's name.
        name: String,
        /// The variants, in declaration order (the index is the position).
        variants: Vec<VariantDesc>,
    },
    /// A reference to a stored object (`odb::Ref<T>`): its id as a `u64`.
    Ref {
        /// The object type, `schema.Type`.
        type_name: String,
    },
    /// A type without a description; its values can only be shown as bytes.
    Opaque {
        /// The Rust type's name, for people.
        rust_type: String,
    },
    /// The innermost enclosing [`TypeDesc::Struct`] or [`TypeDesc::Enum`] of this name: how
    /// a type that contains itself (a tree) is described without repeating forever.
    Recursive {
        /// The enclosing type's name.
        name: String,
    },
}

/// The fields of a struct or an enum variant.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Fields {
    /// No fields (`struct S;`, `Variant`).
    Unit,
    /// Exactly one unnamed field: serialized as the field itself.
    Newtype(Box<TypeDesc>),
    /// Unnamed fields.
    Tuple(Vec<TypeDesc>),
    /// Named fields.
    Named(Vec<(String, TypeDesc)>),
}

/// One variant of an enum.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VariantDesc {
    /// The variant's name.
    pub name: String,
    /// Its fields.
    pub fields: Fields,
}

/// A decoded value.
#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// An unsigned integer.
    UInt(u128),
    /// A signed integer.
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A character.
    Char(char),
    /// A string.
    String(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// The unit value.
    Unit,
    /// An option.
    Option(Option<Box<Value>>),
    /// A sequence.
    Seq(Vec<Value>),
    /// A map, in stored order.
    Map(Vec<(Value, Value)>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A struct value.
    Struct {
        /// The type's name.
        name: String,
        /// Its fields.
        fields: FieldValues,
    },
    /// An enum value.
    Variant {
        /// The enum's name.
        name: String,
        /// The variant's name.
        variant: String,
        /// The variant's fields.
        fields: FieldValues,
    },
    /// A reference to a stored object.
    Ref {
        /// The object type, `schema.Type`.
        type_name: String,
        /// The object's id.
        id: u64,
    },
    /// The bytes of a value without a description.
    Opaque(Vec<u8>),
}

/// The field values of a struct or an enum variant.
#[derive(Clone, PartialEq, Debug)]
pub enum FieldValues {
    /// No fields.
    Unit,
    /// One unnamed field.
    Newtype(Box<Value>),
    /// Unnamed fields.
    Tuple(Vec<Value>),
    /// Named fields.
    Named(Vec<(String, Value)>),
}

/// Why a value could not be decoded or encoded.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DescribeError {
    /// The bytes end before the value does.
    #[error("the value ends early, at byte {0}")]
    Truncated(usize),
    /// The bytes go on after the value.
    #[error("{0} bytes left after the value")]
    TrailingBytes(usize),
    /// The bytes do not fit the description.
    #[error("at byte {at}: {what}")]
    Invalid {
        /// Where.
        at: usize,
        /// What is wrong.
        what: String,
    },
    /// The value nests deeper than [`MAX_DEPTH`].
    #[error("the value nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Text that does not parse as a value of the type.
    #[error("{0}")]
    Text(String),
}

/// How deeply a decoded value may nest, so that a hostile description cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Decodes a stored value with its description. An [`TypeDesc::Opaque`] description takes all
/// the remaining bytes. Fails if the bytes do not fit the description exactly.
pub fn decode_value(desc: &TypeDesc, bytes: &[u8]) -> Result<Value, DescribeError> {
    let mut reader = Reader {
        bytes,
        pos: 0,
        enclosing: Vec::new(),
    };
    let value = reader.value(desc, 0)?;
    match bytes.len() - reader.pos {
        0 => Ok(value),
        left => Err(DescribeError::TrailingBytes(left)),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The structs and enums being decoded, innermost last, for [`TypeDesc::Recursive`].
    enclosing: Vec<&'a TypeDesc>,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&[u8], DescribeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DescribeError::Truncated(self.bytes.len()))?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DescribeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn invalid(&self, what: impl Into<String>) -> DescribeError {
        DescribeError::Invalid {
            at: self.pos,
            what: what.into(),
        }
    }

    /// A bincode varint of at most `max` (the type's largest value).
    fn varint(&mut self, max: u128) -> Result<u128, DescribeError> {
        let at = self.pos;
        let first = self.array::<1>()?[0];
        let n = match first {
            0..=250 => u128::from(first),
            251 => u128::from(u16::from_le_bytes(self.array()?)),
            252 => u128::from(u32::from_le_bytes(self.array()?)),
            253 => u128::from(u64::from_le_bytes(self.array()?)),
            254 => u128::from_le_bytes(self.array()?),
            _ => {
                return Err(DescribeError::Invalid {
                    at,
                    what: format!("invalid integer tag {first}"),
                })
            }
        };
        if n > max {
            return Err(DescribeError::Invalid {
                at,
                what: format!("integer {n} out of range"),
            });
        }
        Ok(n)
    }

    fn zigzag(&mut self, bits: u32) -> Result<i128, DescribeError> {
        let max = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let n = self.varint(max)?;
        // Zigzag: 0, -1, 1, -2, ... as 0, 1, 2, 3, ...; computed without overflow at the ends.
        let half = (n >> 1) as i128;
        Ok(if n & 1 == 0 { half } else { -half - 1 })
    }

    fn len(&mut self) -> Result<usize, DescribeError> {
        let n = self.varint(u128::from(u64::MAX))?;
        let n = usize::try_from(n).map_err(|_| self.invalid("length too large"))?;
        // Every element takes at least one byte, except zero-sized ones; a length far beyond
        // the input is corrupt either way, and must not make the decoder reserve memory.
        if n > self.bytes.len().saturating_sub(self.pos).saturating_mul(8) + 64 {
            return Err(self.invalid(format!("length {n} beyond the value's size")));
        }
        Ok(n)
    }

    fn value(&mut self, desc: &'a TypeDesc, depth: usize) -> Result<Value, DescribeError> {
        if depth > MAX_DEPTH {
            return Err(DescribeError::TooDeep);
        }
        let depth = depth + 1;
        if matches!(desc, TypeDesc::Struct { .. } | TypeDesc::Enum { .. }) {
            self.enclosing.push(desc);
            let value = self.value_of(desc, depth);
            self.enclosing.pop();
            return value;
        }
        self.value_of(desc, depth)
    }

    fn value_of(&mut self, desc: &'a TypeDesc, depth: usize) -> Result<Value, DescribeError> {
        Ok(match desc {
            TypeDesc::Bool => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.invalid(format!("invalid bool {b}"))),
            },
            TypeDesc::U8 => Value::UInt(u128::from(self.array::<1>()?[0])),
            TypeDesc::U16 => Value::UInt(self.varint(u16::MAX.into())?),
            TypeDesc::U32 => Value::UInt(self.varint(u32::MAX.into())?),
            TypeDesc::U64 => Value::UInt(self.varint(u64::MAX.into())?),
            TypeDesc::U128 => Value::UInt(self.varint(u128::MAX)?),
            TypeDesc::I8 => Value::Int(i128::from(self.array::<1>()?[0] as i8)),
            TypeDesc::I16 => Value::Int(self.zigzag(16)?),
            TypeDesc::I32 => Value::Int(self.zigzag(32)?),
            TypeDesc::I64 => Value::Int(self.zigzag(64)?),
            TypeDesc::I128 => Value::Int(self.zigzag(128)?),
            TypeDesc::F32 => Value::Float(f64::from(f32::from_le_bytes(self.array()?))),
            TypeDesc::F64 => Value::Float(f64::from_le_bytes(self.array()?)),
            TypeDesc::Char => self.char()?,
            TypeDesc::String => {
                let len = self.len()?;
                let at = self.pos;
                let text =
                    std::str::from_utf8(self.take(len)?).map_err(|e| DescribeError::Invalid {
                        at,
                        what: format!("invalid UTF-8: {e}"),
                    })?;
                Value::String(text.to_string())
            }
            TypeDesc::Bytes => {
                let len = self.len()?;
                Value::Bytes(self.take(len)?.to_vec())
            }
            TypeDesc::Unit => Value::Unit,
            TypeDesc::Option(inner) => match self.array::<1>()?[0] {
                0 => Value::Option(None),
                1 => Value::Option(Some(Box::new(self.value(inner, depth)?))),
                b => return Err(self.invalid(format!("invalid option tag {b}"))),
            },
            TypeDesc::Seq(inner) => {
                let len = self.len()?;
                let mut items = Vec::new();
                for _ in 0..len {
                    items.push(self.value(inner, depth)?);
                }
                Value::Seq(items)
            }
            TypeDesc::Map(k, v) => {
                let len = self.len()?;
                let mut items = Vec::new();
                for _ in 0..len {
                    items.push((self.value(k, depth)?, self.value(v, depth)?));
                }
                Value::Map(items)
            }
            TypeDesc::Tuple(items) => Value::Tuple(self.values(items, depth)?),
            TypeDesc::Struct { name, fields } => Value::Struct {
                name: name.clone(),
                fields: self.fields(fields, depth)?,
            },
            TypeDesc::Enum { name, variants } => {
                let at = self.pos;
                let index = self.varint(u32::MAX.into())?;
                let variant = usize::try_from(index)
                    .ok()
                    .and_then(|i| variants.get(i))
                    .ok_or_else(|| DescribeError::Invalid {
                        at,
                        what: format!("{name} has no variant {index}"),
                    })?;
                Value::Variant {
                    name: name.clone(),
                    variant: variant.name.clone(),
                    fields: self.fields(&variant.fields, depth)?,
                }
            }
            TypeDesc::Ref { type_name } => Value::Ref {
                type_name: type_name.clone(),
                id: self.varint(u64::MAX.into())? as u64,
            },
            TypeDesc::Opaque { .. } => {
                let rest = self.bytes.len() - self.pos;
                Value::Opaque(self.take(rest)?.to_vec())
            }
            TypeDesc::Recursive { name } => {
                let target = self.enclosing.iter().rev().copied().find(|d| {
                    matches!(d, TypeDesc::Struct { name: n, .. } | TypeDesc::Enum { name: n, .. } if n == name)
                });
                let target = target.ok_or_else(|| {
                    self.invalid(format!("no enclosing type {name} to recurse into"))
                })?;
                return self.value(target, depth);
            }
        })
    }

    fn char(&mut self) -> Result<Value, DescribeError> {
        let first = *self
            .bytes
            .get(self.pos)
            .ok_or(DescribeError::Truncated(self.pos))?;
        let len = match first {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return Err(self.invalid("invalid char")),
        };
        let at = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.chars().next())
            .map(Value::Char)
            .ok_or(DescribeError::Invalid {
                at,
                what: "invalid char".into(),
            })
    }

    fn values(&mut self, descs: &'a [TypeDesc], depth: usize) -> Result<Vec<Value>, DescribeError> {
        descs.iter().map(|d| self.value(d, depth)).collect()
    }

    fn fields(&mut self, fields: &'a Fields, depth: usize) -> Result<FieldValues, DescribeError> {
        Ok(match fields {
            Fields::Unit => FieldValues::Unit,
            Fields::Newtype(inner) => FieldValues::Newtype(Box::new(self.value(inner, depth)?)),
            Fields::Tuple(items) => FieldValues::Tuple(self.values(items, depth)?),
            Fields::Named(named) => FieldValues::Named(
                named
                    .iter()
                    .map(|(n, d)| Ok((n.clone(), self.value(d, depth)?)))
                    .collect::<Result<_, DescribeError>>()?,
            ),
        })
    }
}

/// Encodes a value typed as text (`42`, `true`, `hello`, `-3.5`, `none`) as a value of a
/// primitive, string or reference type, or an option of one, the way the client encodes it.
/// Other types are refused: they have no obvious textual form.
pub fn encode_text(desc: &TypeDesc, text: &str) -> Result<Vec<u8>, DescribeError> {
    let bad = |e: &dyn fmt::Display| DescribeError::Text(format!("{text:?} is not a {desc}: {e}"));
    let encoded = match desc {
        TypeDesc::Bool => crate::encode_exact(&text.parse::<bool>().map_err(|e| bad(&e))?),
        TypeDesc::U8 => crate::encode_exact(&text.parse::<u8>().map_err(|e| bad(&e))?),
        TypeDesc::U16 => crate::encode_exact(&text.parse::<u16>().map_err(|e| bad(&e))?),
        TypeDesc::U32 => crate::encode_exact(&text.parse::<u32>().map_err(|e| bad(&e))?),
        TypeDesc::U64 | TypeDesc::Ref { .. } => {
            crate::encode_exact(&text.parse::<u64>().map_err(|e| bad(&e))?)
        }
        TypeDesc::U128 => crate::encode_exact(&text.parse::<u128>().map_err(|e| bad(&e))?),
        TypeDesc::I8 => crate::encode_exact(&text.parse::<i8>().map_err(|e| bad(&e))?),
        TypeDesc::I16 => crate::encode_exact(&text.parse::<i16>().map_err(|e| bad(&e))?),
        TypeDesc::I32 => crate::encode_exact(&text.parse::<i32>().map_err(|e| bad(&e))?),
        TypeDesc::I64 => crate::encode_exact(&text.parse::<i64>().map_err(|e| bad(&e))?),
        TypeDesc::I128 => crate::encode_exact(&text.parse::<i128>().map_err(|e| bad(&e))?),
        TypeDesc::F32 => crate::encode_exact(&text.parse::<f32>().map_err(|e| bad(&e))?),
        TypeDesc::F64 => crate::encode_exact(&text.parse::<f64>().map_err(|e| bad(&e))?),
        TypeDesc::Char => crate::encode_exact(&text.parse::<char>().map_err(|e| bad(&e))?),
        TypeDesc::String => crate::encode_exact(text),
        TypeDesc::Option(inner) => {
            if text == "none" {
                return Ok(vec![0]);
            }
            let mut out = vec![1];
            out.extend(encode_text(inner, text)?);
            return Ok(out);
        }
        other => {
            return Err(DescribeError::Text(format!(
                "values of {other} cannot be given as text"
            )))
        }
    };
    encoded
        .map(|b| b.to_vec())
        .map_err(|e| DescribeError::Text(e.to_string()))
}

impl fmt::Display for TypeDesc {
    /// Rust-like notation: `Option<Vec<(u32, String)>>`, `Ref<shop.Item>`, the name of a
    /// struct or an enum.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeDesc::Bool => f.write_str("bool"),
            TypeDesc::U8 => f.write_str("u8"),
            TypeDesc::U16 => f.write_str("u16"),
            TypeDesc::U32 => f.write_str("u32"),
            TypeDesc::U64 => f.write_str("u64"),
            TypeDesc::U128 => f.write_str("u128"),
            TypeDesc::I8 => f.write_str("i8"),
            TypeDesc::I16 => f.write_str("i16"),
            TypeDesc::I32 => f.write_str("i32"),
            TypeDesc::I64 => f.write_str("i64"),
            TypeDesc::I128 => f.write_str("i128"),
            TypeDesc::F32 => f.write_str("f32"),
            TypeDesc::F64 => f.write_str("f64"),
            TypeDesc::Char => f.write_str("char"),
            TypeDesc::String => f.write_str("String"),
            TypeDesc::Bytes => f.write_str("Bytes"),
            TypeDesc::Unit => f.write_str("()"),
            TypeDesc::Option(t) => write!(f, "Option<{t}>"),
            TypeDesc::Seq(t) => write!(f, "Vec<{t}>"),
            TypeDesc::Map(k, v) => write!(f, "Map<{k}, {v}>"),
            TypeDesc::Tuple(items) => {
                f.write_str("(")?;
                for (i, t) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                if items.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            TypeDesc::Struct { name, .. }
            | TypeDesc::Enum { name, .. }
            | TypeDesc::Recursive { name } => f.write_str(name),
            TypeDesc::Ref { type_name } => write!(f, "Ref<{type_name}>"),
            TypeDesc::Opaque { rust_type } => write!(f, "opaque {rust_type}"),
        }
    }
}

impl fmt::Display for Value {
    /// Rust-like notation: `Some("x")`, `[1, 2]`, `Point { x: 1, y: 2 }`, `Shape::Circle(2.0)`,
    /// `#17` for a reference, hex for opaque bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::UInt(n) => write!(f, "{n}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Char(c) => write!(f, "{c:?}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Bytes(b) | Value::Opaque(b) => {
                f.write_str("0x")?;
                b.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
            Value::Unit => f.write_str("()"),
            Value::Option(None) => f.write_str("None"),
            Value::Option(Some(v)) => write!(f, "Some({v})"),
            Value::Seq(items) => list(f, "[", items, "]"),
            Value::Tuple(items) => list(f, "(", items, ")"),
            Value::Map(items) => {
                f.write_str("{")?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Struct { name, fields } => {
                f.write_str(name)?;
                fields.fmt(f)
            }
            Value::Variant {
                name,
                variant,
                fields,
            } => {
                write!(f, "{name}::{variant}")?;
                fields.fmt(f)
            }
            Value::Ref { id, .. } => write!(f, "#{id}"),
        }
    }
}

impl fmt::Display for FieldValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValues::Unit => Ok(()),
            FieldValues::Newtype(v) => write!(f, "({v})"),
            FieldValues::Tuple(items) => list(f, "(", items, ")"),
            FieldValues::Named(named) => {
                f.write_str(" { ")?;
                for (i, (n, v)) in named.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n}: {v}")?;
                }
                f.write_str(" }")
            }
        }
    }
}

fn list(f: &mut fmt::Formatter<'_>, open: &str, items: &[Value], close: &str) -> fmt::Result {
    f.write_str(open)?;
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{v}")?;
    }
    f.write_str(close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<T: Serialize>(desc: &TypeDesc, value: &T) -> Value {
        let bytes = crate::encode_exact(value).unwrap();
        decode_value(desc, &bytes).unwrap()
    }

    proptest! {
        #[test]
        fn integers_decode_as_encoded(u in any::<u64>(), i in any::<i64>(), w in any::<i128>(),
                                      s in any::<i16>(), b in any::<i8>(), x in any::<u128>()) {
            prop_assert_eq!(round_trip(&TypeDesc::U64, &u), Value::UInt(u.into()));
            prop_assert_eq!(round_trip(&TypeDesc::I64, &i), Value::Int(i.into()));
            prop_assert_eq!(round_trip(&TypeDesc::I128, &w), Value::Int(w));
            prop_assert_eq!(round_trip(&TypeDesc::I16, &s), Value::Int(s.into()));
            prop_assert_eq!(round_trip(&TypeDesc::I8, &b), Value::Int(b.into()));
            prop_assert_eq!(round_trip(&TypeDesc::U128, &x), Value::UInt(x));
        }

        #[test]
        fn strings_chars_and_options_decode_as_encoded(text in ".*", c in any::<char>(),
                                                        o in any::<Option<(u16, bool)>>()) {
            prop_assert_eq!(round_trip(&TypeDesc::String, &text), Value::String(text.clone()));
            prop_assert_eq!(round_trip(&TypeDesc::Char, &c), Value::Char(c));
            let desc = TypeDesc::Option(Box::new(TypeDesc::Tuple(vec![TypeDesc::U16, TypeDesc::Bool])));
            let expected = Value::Option(o.map(|(n, b)| {
                Box::new(Value::Tuple(vec![Value::UInt(n.into()), Value::Bool(b)]))
            }));
            prop_assert_eq!(round_trip(&desc, &o), expected);
        }

        #[test]
        fn text_encodes_like_the_client(n in any::<i32>(), text in "[a-z]{0,12}") {
            prop_assert_eq!(
                encode_text(&TypeDesc::I32, &n.to_string()).unwrap(),
                crate::encode_exact(&n).unwrap().to_vec()
            );
            prop_assert_eq!(
                encode_text(&TypeDesc::String, &text).unwrap(),
                crate::encode_exact(&text).unwrap().to_vec()
            );
        }

        #[test]
        fn any_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let desc = TypeDesc::Seq(Box::new(TypeDesc::Enum {
                name: "E".into(),
                variants: vec![
                    VariantDesc { name: "A".into(), fields: Fields::Unit },
                    VariantDesc {
                        name: "B".into(),
                        fields: Fields::Named(vec![
                            ("s".into(), TypeDesc::String),
                            ("c".into(), TypeDesc::Char),
                            ("m".into(), TypeDesc::Map(Box::new(TypeDesc::I32), Box::new(TypeDesc::F64))),
                        ]),
                    },
                ],
            }));
            let _ = decode_value(&desc, &bytes);
        }
    }

    #[test]
    fn floats_bytes_and_leftovers() {
        assert_eq!(round_trip(&TypeDesc::F32, &1.5f32), Value::Float(1.5));
        assert_eq!(round_trip(&TypeDesc::F64, &-2.25f64), Value::Float(-2.25));
        assert_eq!(
            decode_value(&TypeDesc::U8, &[1, 2]),
            Err(DescribeError::TrailingBytes(1))
        );
        assert_eq!(
            decode_value(&TypeDesc::String, &[5, b'a']),
            Err(DescribeError::Truncated(2))
        );
        assert_eq!(
            Value::Option(Some(Box::new(Value::String("x".into())))).to_string(),
            "Some(\"x\")"
        );
        assert_eq!(
            encode_text(&TypeDesc::Option(Box::new(TypeDesc::U32)), "none").unwrap(),
            vec![0]
        );
    }
}
