# `nix flake check --no-build`, as far as nixpkgs' lib alone allows: calls
# flake.nix's outputs with a stub nixpkgs input (the vendored lib and the
# stub package sets of stub-pkgs.nix) and returns, for test/nixos, what each
# output holds. Forcing the result evaluates every package's arguments, the
# overlay, the module (through the `module` check) and the checks.
#   nix-instantiate --eval --strict --json nix/tests/eval-flake.nix
let
  lib = import ../vendor/nixpkgs-lib/lib;
  flake = import ../../flake.nix;
  systems = [
    "x86_64-linux"
    "aarch64-linux"
    "x86_64-darwin"
    "aarch64-darwin"
  ];
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs systems (system: import ./stub-pkgs.nix { inherit lib system; });
  };
  self = flake.outputs { inherit self nixpkgs; } // { outPath = toString ../..; };
  describe = drv: {
    inherit (drv) name type;
    storePath = drv.outPath; # (an attribute named outPath would turn this set into a string)
    args = builtins.removeAttrs drv.drvArgs [ "src" ];
    src = toString drv.drvArgs.src or "";
  };
  overlaid = lib.fix (lib.extends self.overlays.default (_: nixpkgs.legacyPackages.x86_64-linux));
in
{
  inputs = builtins.attrNames (flake.inputs or { });
  outputs = builtins.attrNames self;
  packages = lib.mapAttrs (_: lib.mapAttrs (_: describe)) self.packages;
  overlay = describe overlaid.flakegate;
  nixosModules = builtins.attrNames self.nixosModules;
  checks = lib.mapAttrs (_: lib.mapAttrs (_: c: c.drvArgs.units or c.name)) self.checks;
}
