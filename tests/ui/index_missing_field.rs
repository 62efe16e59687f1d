#[odb::schema]
mod stats {
    #[derive(odb::Object)]
    #[odb(index(user_day = (user, date)))]
    pub struct Visit {
        pub user: String,
        pub day: u32,
    }
}

fn main() {}
