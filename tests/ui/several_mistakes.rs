// Every mistake in a struct is reported at once, not one per build.
#[odb::schema]
mod store {
    #[derive(odb::Object)]
    #[odb(index(owner = (owner)))]
    pub struct Item {
        pub id: u64,
        #[odb(defualt)]
        pub price: u64,
        #[index = "price"]
        pub name: String,
    }
}

fn main() {}
