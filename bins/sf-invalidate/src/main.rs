fn main() -> std::process::ExitCode {
    sf_invalidate::main()
}
