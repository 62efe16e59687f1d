#[odb::schema]
mod chat {
    #[derive(odb::Object)]
    #[odb(index(by_channel = (channel)))]
    pub struct Message {
        #[index]
        pub channel: String,
    }
}

fn main() {}
