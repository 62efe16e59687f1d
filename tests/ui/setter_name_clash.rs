#[odb::schema]
mod store {
    #[derive(odb::Object)]
    pub struct Item {
        pub price: u64,
        pub set_price: bool,
    }
}

fn main() {}
