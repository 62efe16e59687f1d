#[odb::schema]
mod chat {
    #[derive(odb::Object)]
    #[odb(indx(channel = (channel)))]
    pub struct Message {
        pub channel: String,
    }
}

fn main() {}
