// `odb::Read` is sealed: only views and transactions read objects.
struct MyReader;

impl odb::Read for MyReader {
    fn tid(&self) -> odb::Tid {
        odb::Tid(0)
    }
}

fn main() {}
