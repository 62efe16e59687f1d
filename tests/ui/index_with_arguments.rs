#[odb::schema]
mod chat {
    #[derive(odb::Object)]
    pub struct Message {
        #[index(unique)]
        pub channel: String,
    }
}

fn main() {}
