#[odb::schema]
mod chat {
    #[derive(odb::Object)]
    pub struct Message {
        pub channel: String,
    }

    pub fn schema() {}
}

fn main() {}
