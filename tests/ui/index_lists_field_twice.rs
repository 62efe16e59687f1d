#[odb::schema]
mod stats {
    #[derive(odb::Object)]
    #[odb(index(user_user = (user, user)))]
    pub struct Visit {
        pub user: String,
    }
}

fn main() {}
