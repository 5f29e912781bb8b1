//! Every attribute mistake is a compile error spanned on the mistake.

#[test]
fn attribute_mistakes_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
