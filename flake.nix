{
  description = "flakegate: a self-hosted Nix binary cache with per-flake read and push rights";

  # No flake.lock is committed: it was made where nixpkgs cannot be fetched.
  # The first `nix build` / `nix flake lock` pins this input. It needs Go
  # >= 1.26.8 (go.mod), i.e. a nixpkgs with buildGo126Module.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      # One package with every binary, and one per binary (same source and
      # vendorHash, fewer subPackages).
      flakegatePackages = pkgs: {
        default = pkgs.callPackage ./nix/package.nix {
          buildGoModule = pkgs.buildGo126Module or pkgs.buildGoModule;
        };
      }
      // lib.genAttrs [ "authz" "blobserver" "flakegate" "devissuer" ] (
        cmd:
        pkgs.callPackage ./nix/package.nix {
          buildGoModule = pkgs.buildGo126Module or pkgs.buildGoModule;
          commands = [ cmd ];
          pname = if cmd == "flakegate" then "flakegate-client" else "flakegate-${cmd}";
        }
      );
    in
    {
      packages = forAllSystems (_: flakegatePackages);

      overlays.default = final: _prev: { flakegate = (flakegatePackages final).default; };

      nixosModules.flakegate =
        { pkgs, lib, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.flakegate.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      nixosModules.default = self.nixosModules.flakegate;

      checks = forAllSystems (
        system: pkgs:
        let
          # The module in every mode, through the NixOS module system with
          # stub options (nix/tests): evaluating this check fails on any
          # failed assertion.
          moduleEval =
            mode:
            let
              r = import ./nix/tests/eval-module.nix {
                inherit lib pkgs;
                module = self.nixosModules.flakegate;
                config = import ./nix/tests/example-config.nix { inherit mode; };
              };
            in
            if r.failedAssertions == [ ] then
              r
            else
              throw "flakegate module (${mode}): ${lib.concatStringsSep "; " r.failedAssertions}";
        in
        {
          inherit (self.packages.${system}) default;
          module = pkgs.runCommand "flakegate-module-eval" {
            units = builtins.toJSON (map moduleEval [
              "single-host"
              "embedded-gate"
              "behind-envoy"
            ]);
            passAsFile = [ "units" ];
          } ''cp "$unitsPath" "$out"'';
        }
        # With a real nixpkgs: a whole NixOS system with the module (its real
        # systemd unit generation and assertions). Not evaluated by our tests,
        # which only have nixpkgs' lib.
        // lib.optionalAttrs (lib ? nixosSystem && lib.hasSuffix "-linux" system) {
          nixos-system =
            (lib.nixosSystem {
              inherit system;
              modules = [
                self.nixosModules.flakegate
                (import ./nix/tests/example-config.nix { mode = "single-host"; })
                {
                  boot.isContainer = true;
                  system.stateVersion = "25.11";
                }
              ];
            }).config.system.build.toplevel;
        }
      );
    };
}
