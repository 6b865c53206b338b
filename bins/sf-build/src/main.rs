fn main() -> std::process::ExitCode {
    sf_build::main()
}
