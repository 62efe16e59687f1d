#[odb::schema]
mod boxes {
    #[derive(odb::Object)]
    pub struct Boxed<T> {
        pub value: T,
    }
}

fn main() {}
