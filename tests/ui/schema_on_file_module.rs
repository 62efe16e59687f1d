#[odb::schema]
mod chat;

fn main() {}
