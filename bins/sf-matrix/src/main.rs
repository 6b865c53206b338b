fn main() -> std::process::ExitCode {
    sf_matrix::main()
}
