#[odb::schema(nmae = "chat")]
mod chat {
    #[derive(odb::Object)]
    pub struct Message {
        pub channel: String,
    }
}

fn main() {}
