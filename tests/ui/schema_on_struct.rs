#[odb::schema]
pub struct Message {
    pub text: String,
}

fn main() {}
