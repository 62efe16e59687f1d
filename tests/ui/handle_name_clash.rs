#[odb::schema]
mod chat {
    #[derive(odb::Object)]
    pub struct Message {
        pub channel: String,
    }

    pub struct MessageRef;
}

fn main() {}
