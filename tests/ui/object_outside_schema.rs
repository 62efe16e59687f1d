#[derive(odb::Object)]
pub struct Message {
    pub text: String,
}

fn main() {}
