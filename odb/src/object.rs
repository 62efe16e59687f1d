//! The traits `#[derive(odb::Object)]` implements, and the typed operations built on them.

use crate::schema::{Schema, TypeDef};
use crate::{Error, Read, Result, Transaction};
use bytes::Bytes;
use odb_wire::ObjectId;
use std::fmt::Debug;
use std::hash::Hash;

/// A struct stored in ODB. Implemented by `#[derive(odb::Object)]`; do not implement it by hand.
pub trait Object: Sized + Send + Sync + 'static {
    /// The `Copy` handle type that refers to a stored object of this type: `odb::Ref<Self>`.
    type Handle: Handle<Object = Self>;

    /// The type's description.
    fn type_def() -> &'static TypeDef;

    /// The schema the type belongs to.
    fn schema() -> &'static Schema;

    /// Encodes every field, in declaration order.
    #[doc(hidden)]
    fn __encode_fields(&self) -> Result<Vec<Bytes>>;

    /// Builds a value from stored fields, in declaration order (`None`: no stored value).
    #[doc(hidden)]
    fn __decode_fields(id: ObjectId, fields: Vec<Option<Bytes>>) -> Result<Self>;
}

/// A reference to a stored object of type `Self::Object`. Compares, orders and hashes by id;
/// making one from an id touches nothing.
pub trait Handle: Copy + Eq + Ord + Hash + Debug + Send + Sync + 'static {
    /// The object type it refers to.
    type Object: Object<Handle = Self>;

    /// The handle of the object with this id (which may or may not exist).
    fn from_id(id: ObjectId) -> Self;

    /// The object's id.
    fn id(&self) -> ObjectId;
}

/// The handle type of object type `T`: `odb::Ref<Message>` is what `Message::create` returns.
pub type Ref<T> = <T as Object>::Handle;

/// A value accepted where an index value of type `V` is expected: `V` itself, and `&str` or
/// `&String` for a `String` index, so that `Message::lookup_all_by_channel(v, "general")` and
/// `Visit::lookup_all_by_day(v, 3)` both read naturally.
pub trait IndexArg<V> {
    /// Converts into the index's value type.
    fn into_index_value(self) -> V;
}

impl<T> IndexArg<T> for T {
    fn into_index_value(self) -> T {
        self
    }
}

impl IndexArg<String> for &str {
    fn into_index_value(self) -> String {
        self.to_string()
    }
}

impl IndexArg<String> for &String {
    fn into_index_value(self) -> String {
        self.clone()
    }
}

/// Encodes a field or index value. Deterministic: equal values give equal bytes, and a tuple
/// encodes as the concatenation of its elements, which is how composite index values are formed.
pub fn encode_value<T: serde::Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    odb_wire::encode_exact(value).map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes a stored field value of field `field` of type `ty`.
#[doc(hidden)]
pub fn __decode_field<T: serde::de::DeserializeOwned>(
    ty: &'static TypeDef,
    field: usize,
    id: ObjectId,
    value: Option<Bytes>,
) -> Result<T> {
    decode_field_slice(ty, field, id, value.as_deref())
}

/// Like [`__decode_field`], from borrowed bytes.
fn decode_field_slice<T: serde::de::DeserializeOwned>(
    ty: &'static TypeDef,
    field: usize,
    id: ObjectId,
    value: Option<&[u8]>,
) -> Result<T> {
    let def = &ty.fields[field];
    match value {
        Some(bytes) => odb_wire::decode(bytes).map_err(|e| Error::Decode {
            type_name: ty.qualified_name(),
            field: def.name.to_string(),
            reason: e.to_string(),
        }),
        None => Err(Error::MissingField {
            type_name: ty.qualified_name(),
            field: def.name.to_string(),
            object: id.0,
        }),
    }
}

/// Like [`__decode_field`], but a missing value reads as `T::default()` (`#[odb(default)]`).
#[doc(hidden)]
pub fn __decode_field_or_default<T: serde::de::DeserializeOwned + Default>(
    ty: &'static TypeDef,
    field: usize,
    id: ObjectId,
    value: Option<Bytes>,
) -> Result<T> {
    match value {
        None => Ok(T::default()),
        some => __decode_field(ty, field, id, some),
    }
}

/// Typed operations used by the generated accessors.
#[doc(hidden)]
pub mod ops {
    use super::*;

    /// Creates an object in a transaction.
    pub fn create<T: Object>(tx: &mut Transaction<'_>, value: T) -> Result<T::Handle> {
        let fields = value.__encode_fields()?;
        tx.create_raw(T::schema(), T::type_def(), fields)
            .map(T::Handle::from_id)
    }

    /// Reads one field.
    pub fn field<T: Object, V: serde::de::DeserializeOwned>(
        r: &impl Read,
        id: ObjectId,
        field: usize,
    ) -> Result<V> {
        let ty = T::type_def();
        r.read_field_with(ty, id, field, |bytes| {
            decode_field_slice(ty, field, id, bytes)
        })
    }

    /// Reads one field marked `#[odb(default)]`.
    pub fn field_or_default<T: Object, V: serde::de::DeserializeOwned + Default>(
        r: &impl Read,
        id: ObjectId,
        field: usize,
    ) -> Result<V> {
        let ty = T::type_def();
        r.read_field_with(ty, id, field, |bytes| match bytes {
            None => Ok(V::default()),
            some => decode_field_slice(ty, field, id, some),
        })
    }

    /// Writes one field.
    pub fn set_field<T: Object, V: serde::Serialize>(
        tx: &mut Transaction<'_>,
        id: ObjectId,
        field: usize,
        value: &V,
    ) -> Result<()> {
        tx.write_field_raw(T::type_def(), id, field, encode_value(value)?)
    }

    /// Reads every field.
    pub fn get<T: Object>(r: &impl Read, id: ObjectId) -> Result<T> {
        let ty = T::type_def();
        let mut fields = Vec::with_capacity(ty.fields.len());
        for i in 0..ty.fields.len() {
            fields.push(r.read_field_raw(ty, id, i)?);
        }
        T::__decode_fields(id, fields)
    }

    /// Whether the object exists.
    pub fn exists<T: Object>(r: &impl Read, id: ObjectId) -> Result<bool> {
        r.exists_raw(T::type_def(), id)
    }

    /// Deletes the object.
    pub fn delete<T: Object>(tx: &mut Transaction<'_>, id: ObjectId) -> Result<()> {
        tx.delete_raw(T::type_def(), id)
    }

    /// All objects with this index value (`index == None`: all objects of the type),
    /// ascending id.
    pub fn lookup_all<T: Object>(
        r: &impl Read,
        index: Option<usize>,
        value: Bytes,
    ) -> Result<Vec<T::Handle>> {
        Ok(r.lookup_raw(T::type_def(), index, &value)?
            .into_iter()
            .map(T::Handle::from_id)
            .collect())
    }

    /// The lowest-id object with this index value, if any.
    pub fn lookup_any<T: Object>(
        r: &impl Read,
        index: Option<usize>,
        value: Bytes,
    ) -> Result<Option<T::Handle>> {
        Ok(lookup_all::<T>(r, index, value)?.into_iter().next())
    }

    /// The lowest-id object with this index value; an error, naming the value as `describe`
    /// gives it, if there is none.
    pub fn lookup_one<T: Object>(
        r: &impl Read,
        index: Option<usize>,
        value: Bytes,
        describe: impl FnOnce() -> String,
    ) -> Result<T::Handle> {
        lookup_any::<T>(r, index, value)?.ok_or_else(|| Error::NotFound {
            type_name: T::type_def().qualified_name(),
            index: index_name(T::type_def(), index),
            value: describe(),
        })
    }

    /// The only object with this index value, if any; an error if several have it.
    pub fn lookup_unique<T: Object>(
        r: &impl Read,
        index: Option<usize>,
        value: Bytes,
    ) -> Result<Option<T::Handle>> {
        let all = lookup_all::<T>(r, index, value)?;
        match all.len() {
            0 | 1 => Ok(all.into_iter().next()),
            count => Err(Error::NotUnique {
                type_name: T::type_def().qualified_name(),
                index: index_name(T::type_def(), index),
                count,
            }),
        }
    }

    /// The value to subscribe to with `subscribe_index`; an encoding error surfaces there.
    pub fn index_value<T: Object>(index: usize, value: Result<Bytes>) -> crate::IndexValue {
        crate::IndexValue::__new(
            T::schema(),
            T::type_def(),
            index,
            value.map_err(|e| e.to_string()),
        )
    }

    fn index_name(ty: &TypeDef, index: Option<usize>) -> String {
        match index {
            None => "(all objects)".to_string(),
            Some(i) => ty.indices.get(i).map_or("?", |d| d.name).to_string(),
        }
    }
}

/// Describes a looked-up value for an error message: its `Debug` form when its type has one,
/// a note otherwise. The generated lookups call `(&Described(&value)).describe()` with both
/// traits in scope; method resolution then picks [`DescribeDebug`] when the type is `Debug`
/// (it matches the receiver without an extra reference) and [`DescribeOther`] otherwise, so
/// field types need not implement `Debug`.
#[doc(hidden)]
pub struct Described<'a, T>(pub &'a T);

/// See [`Described`].
#[doc(hidden)]
pub trait DescribeDebug {
    /// The value's `Debug` form, shortened to about 100 characters.
    fn describe(&self) -> String;
}

impl<T: std::fmt::Debug> DescribeDebug for Described<'_, T> {
    fn describe(&self) -> String {
        const LIMIT: usize = 100;
        let text = format!("{:?}", self.0);
        match text.char_indices().nth(LIMIT) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        }
    }
}

/// See [`Described`].
#[doc(hidden)]
pub trait DescribeOther {
    /// A note standing in for a value whose type has no `Debug` form.
    fn describe(&self) -> String;
}

impl<T> DescribeOther for &Described<'_, T> {
    fn describe(&self) -> String {
        "the looked-up value (its type does not implement Debug)".to_string()
    }
}
