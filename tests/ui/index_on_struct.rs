#[odb::schema]
mod chat {
    #[derive(odb::Object)]
    #[index]
    pub struct Message {
        pub channel: String,
    }
}

fn main() {}
