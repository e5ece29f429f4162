# A stand-in for nixpkgs' package set with what flake.nix and nix/module.nix
# use, for evaluation with nixpkgs' lib alone: builders return derivations
# that cannot be built, with their arguments kept (drvArgs) for tests to
# inspect.
{ lib, system }:
let
  # A real derivation (so that `nix flake check` can instantiate it) that
  # only fails if built: env goes into the derivation (and is evaluated when
  # it is instantiated), attrs beside it.
  fake =
    name: env: attrs:
    derivation (
      env
      // {
        inherit name system;
        builder = "/bin/sh";
        args = [
          "-c"
          "echo stub package set: nothing can be built here; exit 1"
        ];
      }
    )
    // attrs;
  self = {
    inherit lib;
    stdenv.hostPlatform.system = system;
    callPackage = lib.callPackageWith self;
    buildGoModule =
      args:
      # Like nixpkgs: a missing hash or version is an evaluation error.
      assert args ? vendorHash && args ? version;
      fake "${args.pname}-${args.version}" { } { drvArgs = args; };
    # Present in nixpkgs with Go 1.26 (go.mod asks for 1.26.8).
    buildGo126Module = self.buildGoModule;
    runCommand =
      name: env: script:
      fake name (env // { buildCommand = script; }) {
        drvArgs = env // {
          inherit script;
        };
      };
  };
in
self
