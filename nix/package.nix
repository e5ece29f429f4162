# The flakegate binaries (authz, blobserver, flakegate, devissuer), the
# shipped policies and envoy.yaml. Called by flake.nix (packages, overlay)
# with nixpkgs' buildGoModule for Go >= 1.26.8 (go.mod's go line).
#
# vendorHash is the NAR hash of `go mod vendor`'s output: test/nixos
# (TestVendorHash) recomputes it from go.mod/go.sum with the Go toolchain and
# `nix hash path`, so a dependency change that forgets it fails the tests
# with the new value. Evaluated by the tests, never built here (no nixpkgs).
{
  lib,
  buildGoModule,
  # Which commands to build: a subset gives the per-binary packages.
  commands ? [
    "authz"
    "blobserver"
    "flakegate"
    "devissuer"
  ],
  pname ? "flakegate",
}:

let
  # The whole repository (lib.cleanSource drops .git, result links, editor
  # files): `go mod vendor` in buildGoModule then sees the same packages, test
  # files included, as TestVendorHash does in a checkout. Left out too: the
  # top-level directories .gitignore names for local data (benchmark indexes
  # of many GB under .bench/, which evaluating the flake would copy into the
  # store).
  root = toString ../.;
  localData = map (d: "${root}/${d}") [
    ".bench"
    ".devbench"
    ".data"
    "bin"
    "tmp"
  ];
  src = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    filter = name: type: !(type == "directory" && builtins.elem name localData);
  };
in
buildGoModule {
  inherit pname src;
  version = "0.1.0";

  vendorHash = "sha256-ocL2o4UoA4F3VCx2gLUhlVRVEqUQ95KQVxLQ8UUFwVM=";

  subPackages = map (c: "cmd/${c}") commands;
  env.CGO_ENABLED = 0; # modernc sqlite: pure Go, static binaries
  ldflags = [
    "-s"
    "-w"
  ];
  # The tests need a real Nix, PostgreSQL and the network: scripts/test.sh
  # runs them, not the Nix build sandbox.
  doCheck = false;

  # The default policy set and the Envoy configuration travel with the
  # binaries: the NixOS module reads the policies from here.
  postInstall = ''
    mkdir -p $out/share/flakegate
    cp -r policies $out/share/flakegate/policies
    cp envoy/envoy.yaml $out/share/flakegate/envoy.yaml
  '';

  meta = {
    description = "Self-hosted Nix binary cache with per-flake read and push rights";
    homepage = "https://github.com/flakegate/flakegate";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
    mainProgram = if builtins.length commands == 1 then builtins.head commands else "flakegate";
  };
}
