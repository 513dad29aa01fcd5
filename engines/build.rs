//! Links espeak-ng (Debian `libespeak-ng-dev`) for phonemisation in-process.
fn main() {
    println!("cargo:rustc-link-lib=espeak-ng");
}
