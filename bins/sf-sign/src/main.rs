fn main() -> std::process::ExitCode {
    sf_sign::main()
}
