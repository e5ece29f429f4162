# A stand-in for nixpkgs' package set with what flake.nix and nix/module.nix
# use, for evaluation with nixpkgs' lib alone: builders return derivation-like
# attribute sets (type = "derivation", a fake store path) that keep their
# arguments, so tests can inspect them; nothing is built.
{ lib, system }:
let
  fake =
    name: attrs:
    attrs
    // {
      type = "derivation";
      inherit name system;
      outPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}";
    };
  self = {
    inherit lib;
    stdenv.hostPlatform.system = system;
    callPackage = lib.callPackageWith self;
    buildGoModule =
      args:
      # Like nixpkgs: a missing hash or version is an evaluation error.
      assert args ? vendorHash && args ? version;
      fake "${args.pname}-${args.version}" { drvArgs = args; };
    # Present in nixpkgs with Go 1.26 (go.mod asks for 1.26.8).
    buildGo126Module = self.buildGoModule;
    runCommand =
      name: env: script:
      fake name {
        drvArgs = env // {
          inherit script;
        };
      };
  };
in
self
