# A stand-in for the nixpkgs flake input, for a real
# `nix flake check --no-build` without nixpkgs (test/nixos TestFlakeCheck).
# The test assembles the input in a temporary directory: this file,
# ../stub-pkgs.nix beside it, and the vendored nixpkgs lib as ./lib
# (a flake may not read files outside its own directory), then runs
#   nix flake check --no-build path:<repo> --override-input nixpkgs path:<dir>
# Its lib is nixpkgs' lib; its package sets are stub-pkgs.nix, whose builders
# make real derivations that cannot be built.
{
  outputs =
    { self }:
    let
      lib = import ./lib;
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ] (system: import ./stub-pkgs.nix { inherit lib system; });
    };
}
