#[odb::schema]
mod shapes {
    #[derive(odb::Object)]
    pub struct Marker;
}

fn main() {}
