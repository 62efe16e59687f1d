#[odb::schema]
mod shapes {
    #[derive(odb::Object)]
    pub struct Point(pub f64, pub f64);
}

fn main() {}
