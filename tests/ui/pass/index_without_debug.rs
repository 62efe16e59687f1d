//! A field type without `Debug` can be indexed: `lookup_one`'s error then names the value
//! without its `Debug` form.

use serde::{Deserialize, Serialize};

#[odb::schema]
mod tags {
    use super::*;

    /// A value type that implements no `Debug`.
    #[derive(Clone, Serialize, Deserialize)]
    pub struct Tag(pub u32);

    #[derive(odb::Object)]
    pub struct Item {
        #[index]
        pub tag: Tag,
    }
}

#[allow(dead_code)]
fn find(v: &impl odb::Read) -> odb::Result<tags::ItemRef> {
    tags::Item::lookup_one_by_tag(v, tags::Tag(1))
}

fn main() {}
