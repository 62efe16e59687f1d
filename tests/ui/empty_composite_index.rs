#[odb::schema]
mod stats {
    #[derive(odb::Object)]
    #[odb(index(by_nothing = ()))]
    pub struct Visit {
        pub user: String,
    }
}

fn main() {}
