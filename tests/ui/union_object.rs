#[odb::schema]
mod raw {
    #[derive(odb::Object)]
    pub union Bits {
        pub int: u64,
        pub float: f64,
    }
}

fn main() {}
