#[odb::schema]
mod chat {
    #[derive(odb::Object)]
    pub struct Message {
        #[odb(unique)]
        pub channel: String,
    }
}

fn main() {}
