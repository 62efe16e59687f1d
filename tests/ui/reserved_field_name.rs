#[odb::schema]
mod store {
    #[derive(odb::Object)]
    pub struct Item {
        pub get: String,
    }
}

fn main() {}
