// A generic type cannot derive odb::Describe: the description must be fixed.

#[derive(odb::Describe)]
pub struct Wrapper<T> {
    pub inner: T,
}

fn main() {}
