# Stand-ins for the NixOS options that nix/module.nix sets outside its own
# services.flakegate tree, declared with NixOS's names and (simplified)
# types, so that the module can be evaluated with nixpkgs' lib alone. An
# option the module sets that is not declared here fails the evaluation, as
# it would on NixOS.
{ lib, ... }:
let
  inherit (lib) types mkOption;
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    environment.etc = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule {
          options = {
            text = mkOption {
              type = types.nullOr types.lines;
              default = null;
            };
            source = mkOption {
              type = types.nullOr (types.either types.path types.str);
              default = null;
            };
          };
        }
      );
    };
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    systemd.services = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule {
          options = {
            description = mkOption {
              type = types.str;
              default = "";
            };
            documentation = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            after = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            wants = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            requires = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            wantedBy = mkOption {
              type = types.listOf types.str;
              default = [ ];
            };
            restartTriggers = mkOption {
              type = types.listOf types.unspecified;
              default = [ ];
            };
            environment = mkOption {
              type = types.attrsOf types.str;
              default = { };
            };
            # NixOS: attrsOf unitOption (bool, int, str, path or a list of them).
            serviceConfig = mkOption {
              type = types.attrsOf (
                types.oneOf [
                  types.bool
                  types.int
                  types.str
                  types.path
                  (types.listOf (
                    types.oneOf [
                      types.int
                      types.str
                      types.path
                    ]
                  ))
                ]
              );
              default = { };
            };
          };
        }
      );
    };
  };
}
