#[odb::schema]
mod stats {
    #[derive(odb::Object)]
    #[odb(index(by_user_user = (user, user)))]
    pub struct Visit {
        pub user: String,
    }
}

fn main() {}
