"""What hosts do with a template that USB itself allows (docs/hardware.md, "Host quirks"):
warnings `gadgetd check` prints, never refusals."""

from __future__ import annotations

from gadgetd.model import GadgetSpec


def warnings(spec: GadgetSpec) -> list[str]:
    found = []
    if len(spec.configs) > 1:
        rest = ", ".join(c.configfs_name for c in spec.configs[1:])
        found.append(f"Windows uses only the first configuration ({spec.configs[0].configfs_name}"
                     f"): {rest} will not be seen there")
    for cfg in spec.configs:
        types = [spec.functions[name].type for name in cfg.functions]
        if "rndis" in types:
            name = cfg.functions[types.index("rndis")]
            if types.index("rndis") != 0:
                found.append(f"{cfg.configfs_name}: Windows binds RNDIS ({name}) only as the "
                             "first function (interface 0)")
            if spec.functions[name].os_desc is None or spec.os_desc is None:
                found.append(f"{cfg.configfs_name}: RNDIS ({name}) without MS OS descriptors "
                             "([function.NAME.os_desc] and [gadget.os_desc]) needs an INF on "
                             "Windows")
        if "ecm" in types and "ncm" in types:
            found.append(f"{cfg.configfs_name}: macOS drives NCM and leaves ECM unused when "
                         "both are present")
    return found
