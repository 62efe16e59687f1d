#[odb::schema]
mod stats {
    #[derive(odb::Object)]
    #[odb(index(nothing = ()))]
    pub struct Visit {
        pub user: String,
    }
}

fn main() {}
