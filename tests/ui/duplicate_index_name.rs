#[odb::schema]
mod stats {
    #[derive(odb::Object)]
    #[odb(index(user = (user, day)))]
    pub struct Visit {
        #[index]
        pub user: String,
        pub day: u32,
    }
}

fn main() {}
