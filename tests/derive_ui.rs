//! Compile tests of `#[odb::schema]`, `#[derive(odb::Object)]` and `#[derive(odb::Describe)]`:
//! each file in `tests/ui/` makes one mistake, and its `.stderr` holds the error the user sees;
//! the files in `tests/ui/pass/` must compile.

#[test]
fn derive_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/*.rs");
}
