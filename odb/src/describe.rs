//! Descriptions of field types, sent to the server with a schema so that tools (the `odb`
//! command, the web inspector) can decode stored values without the Rust types.
//!
//! `#[derive(odb::Object)]` describes every field through [`Describe`]. The primitives,
//! strings, options, sequences, maps, tuples, `Box`, `Ref<T>` and [`ObjectId`] implement it;
//! your own structs and enums used as field types do with `#[derive(odb::Describe)]`. A field
//! whose type does not implement it is still stored as usual and described as
//! [`TypeDesc::Opaque`]: tools show its bytes.
//!
//! ```
//! #[derive(odb::Describe, serde::Serialize, serde::Deserialize)]
//! enum Shape {
//!     Circle { radius: f64 },
//!     Polygon(Vec<(i32, i32)>),
//! }
//! use odb::Describe;
//! assert_eq!(Shape::describe().to_string(), "Shape");
//! ```

use odb_wire::ObjectId;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::marker::PhantomData;

pub use odb_wire::describe::{
    decode_value, encode_text, DescribeError, FieldValues, Fields, TypeDesc, Value, VariantDesc,
};

/// A type whose serialized shape can be described. Derive it with `#[derive(odb::Describe)]`.
pub trait Describe {
    /// The description of this type's serialized values.
    fn describe() -> TypeDesc;
}

macro_rules! primitive {
    ($($ty:ty => $desc:ident),* $(,)?) => {
        $(impl Describe for $ty {
            fn describe() -> TypeDesc {
                TypeDesc::$desc
            }
        })*
    };
}

primitive!(
    bool => Bool, u8 => U8, u16 => U16, u32 => U32, u64 => U64, usize => U64, u128 => U128,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64, isize => I64, i128 => I128,
    f32 => F32, f64 => F64, char => Char, String => String, str => String, () => Unit,
    bytes::Bytes => Bytes,
);

impl Describe for ObjectId {
    fn describe() -> TypeDesc {
        TypeDesc::Struct {
            name: "ObjectId".into(),
            fields: Fields::Newtype(Box::new(TypeDesc::U64)),
        }
    }
}

macro_rules! wrapper {
    ($($ty:ty),*) => {
        $(impl<T: Describe + ?Sized> Describe for $ty {
            fn describe() -> TypeDesc {
                T::describe()
            }
        })*
    };
}

wrapper!(Box<T>, std::rc::Rc<T>, std::sync::Arc<T>);

impl<T: Describe + ?Sized> Describe for &T {
    fn describe() -> TypeDesc {
        T::describe()
    }
}

impl<T: Describe> Describe for Option<T> {
    fn describe() -> TypeDesc {
        TypeDesc::Option(Box::new(T::describe()))
    }
}

macro_rules! seq {
    ($($ty:ident),*) => {
        $(impl<T: Describe> Describe for $ty<T> {
            fn describe() -> TypeDesc {
                TypeDesc::Seq(Box::new(T::describe()))
            }
        })*
    };
}

seq!(Vec, VecDeque, BTreeSet);

impl<T: Describe, S> Describe for HashSet<T, S> {
    fn describe() -> TypeDesc {
        TypeDesc::Seq(Box::new(T::describe()))
    }
}

impl<T: Describe> Describe for [T] {
    fn describe() -> TypeDesc {
        TypeDesc::Seq(Box::new(T::describe()))
    }
}

impl<T: Describe, const N: usize> Describe for [T; N] {
    fn describe() -> TypeDesc {
        TypeDesc::Tuple(vec![T::describe(); N])
    }
}

impl<K: Describe, V: Describe> Describe for BTreeMap<K, V> {
    fn describe() -> TypeDesc {
        TypeDesc::Map(Box::new(K::describe()), Box::new(V::describe()))
    }
}

impl<K: Describe, V: Describe, S> Describe for HashMap<K, V, S> {
    fn describe() -> TypeDesc {
        TypeDesc::Map(Box::new(K::describe()), Box::new(V::describe()))
    }
}

macro_rules! tuple {
    ($(($($t:ident),+))*) => {
        $(impl<$($t: Describe),+> Describe for ($($t,)+) {
            fn describe() -> TypeDesc {
                TypeDesc::Tuple(vec![$($t::describe()),+])
            }
        })*
    };
}

tuple!((A)(A, B)(A, B, C)(A, B, C, D)(A, B, C, D, E)(
    A, B, C, D, E, F
)(A, B, C, D, E, F, G)(A, B, C, D, E, F, G, H));

thread_local! {
    /// The derived types being described on this thread, innermost last.
    static DESCRIBING: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// Describes a derived type named `name` with `build`, or, inside its own description (a type
/// that contains itself), as [`TypeDesc::Recursive`]. Called by generated code.
#[doc(hidden)]
pub fn __nested<T: ?Sized>(name: &str, build: impl FnOnce() -> TypeDesc) -> TypeDesc {
    let key = std::any::type_name::<T>();
    let inside = DESCRIBING.with(|d| d.borrow().contains(&key));
    if inside {
        return TypeDesc::Recursive { name: name.into() };
    }
    DESCRIBING.with(|d| d.borrow_mut().push(key));
    let desc = build();
    DESCRIBING.with(|d| d.borrow_mut().pop());
    desc
}

fn opaque<T: ?Sized>() -> TypeDesc {
    TypeDesc::Opaque {
        rust_type: std::any::type_name::<T>().to_string(),
    }
}

/// Picks `T`'s [`Describe`] impl when it has one and [`TypeDesc::Opaque`] otherwise, by method
/// resolution on `&&Probe<T>` (generated code calls `(&&Probe::<T>::new()).__odb_describe()`
/// with both traits in scope; field types are concrete there, so the choice is made at
/// compile time).
#[doc(hidden)]
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    /// A probe for `T`.
    pub fn new() -> Self {
        Probe(PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The preferred candidate: `T` implements [`Describe`].
#[doc(hidden)]
pub trait ViaDescribe {
    /// `T::describe()`.
    fn __odb_describe(&self) -> TypeDesc;
}

impl<T: Describe + ?Sized> ViaDescribe for &Probe<T> {
    fn __odb_describe(&self) -> TypeDesc {
        T::describe()
    }
}

/// The fallback candidate: an opaque description naming the Rust type.
#[doc(hidden)]
pub trait ViaOpaque {
    /// [`TypeDesc::Opaque`].
    fn __odb_describe(&self) -> TypeDesc;
}

impl<T: ?Sized> ViaOpaque for Probe<T> {
    fn __odb_describe(&self) -> TypeDesc {
        opaque::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NotDescribed;

    #[test]
    // The double reference is the point: it is what makes the fallback a second choice.
    #[allow(clippy::needless_borrow)]
    fn probes_pick_the_impl_or_fall_back_to_opaque() {
        let described = (&&Probe::<Vec<Option<u16>>>::new()).__odb_describe();
        assert_eq!(described.to_string(), "Vec<Option<u16>>");
        let opaque = (&&Probe::<NotDescribed>::new()).__odb_describe();
        assert!(matches!(opaque, TypeDesc::Opaque { .. }), "{opaque:?}");
        let tuple = <(u8, [i32; 2], HashMap<String, bool>)>::describe();
        assert_eq!(tuple.to_string(), "(u8, (i32, i32), Map<String, bool>)");
    }
}
