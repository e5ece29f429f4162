# Evaluates nix/module.nix with the NixOS module system of nixpkgs' lib,
# stub options (stubs.nix) and a stub package set; returns what the module
# generated, and the messages of the assertions that failed (NixOS refuses to
# build a system with any).
#   nix-instantiate --eval --strict --json nix/tests/eval-module.nix \
#     --arg config '{ services.flakegate = { enable = true; authz.issuers = [ ... ]; }; }'
{
  config ? { },
  lib ? import ../vendor/nixpkgs-lib/lib,
  pkgs ? import ./stub-pkgs.nix {
    inherit lib;
    system = "x86_64-linux";
  },
  # The module under test (flake.nix passes its nixosModules.flakegate).
  module ? ../module.nix,
}:
let
  eval = lib.evalModules {
    modules = [
      ./stubs.nix
      module
      { _module.args.pkgs = lib.mkDefault (pkgs // { flakegate = pkgs.flakegate or (pkgs.callPackage ../package.nix { }); }); }
      config
    ];
  };
  c = eval.config;
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  inherit (c) warnings;
  services = lib.mapAttrs (_: s: {
    inherit (s)
      description
      after
      wants
      requires
      wantedBy
      environment
      serviceConfig
      ;
    restartTriggers = map toString s.restartTriggers;
  }) c.systemd.services;
  etc = lib.mapAttrs (_: e: { inherit (e) text; source = if e.source == null then null else toString e.source; }) c.environment.etc;
  firewall = c.networking.firewall.allowedTCPPorts;
  package = toString c.services.flakegate.package;
}
