#[odb::schema]
mod shapes {
    #[derive(odb::Object)]
    pub enum Shape {
        Circle { radius: f64 },
        Square { side: f64 },
    }
}

fn main() {}
