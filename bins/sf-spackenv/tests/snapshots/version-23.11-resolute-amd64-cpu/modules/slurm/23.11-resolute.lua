-- -*- lua -*-
-- Slurm 23-11-11-1 for Ubuntu (newest) (resolute), amd64, cpu: modulefile
-- slurm/23.11-resolute, written by sf-spackenv for cell version-23.11-resolute-amd64-cpu.
--
-- Relocatable: the prefix is SLURM_INSTALL_PREFIX when it is set, /opt/slurm/view otherwise.
-- Nothing else is loaded with this module; the binaries find their libraries on their own.

whatis("Name: Slurm")
whatis("Version: 23-11-11-1")
whatis("Toolchain: resolute (Ubuntu (newest))")
whatis("Target: x86_64_v3 (amd64, cpu)")
whatis("URL: https://slurm.schedmd.com")

help([[
Slurm 23-11-11-1 built for Ubuntu (newest) (resolute) by Slurm Factory.

Before loading, set SLURM_INSTALL_PREFIX to the directory that holds Slurm's bin/, sbin/ and
lib/ (the tarball's view/) when it is not /opt/slurm/view. SLURM_CONF keeps its value when
it is already set, and is /etc/slurm/slurm.conf otherwise.
]])

-- One Slurm at a time: a site's own Slurm module under another name that declares the same
-- family is swapped out (or refused, with LMOD_AUTO_SWAP=no); the conflict covers other
-- versions of this module.
family("slurm")
conflict("slurm")

local default_prefix = "/opt/slurm/view"

-- True when a file can be opened (works on every Lmod, unlike isFile).
local function exists(path)
  local f = io.open(path, "r")
  if f then
    f:close()
    return true
  end
  return false
end

local env_prefix = os.getenv("SLURM_INSTALL_PREFIX")
local prefix = env_prefix
if mode() == "unload" and (os.getenv("SLURM_ROOT") or "") ~= "" then
  -- Undo exactly what loading did, even if SLURM_INSTALL_PREFIX changed since.
  prefix = os.getenv("SLURM_ROOT")
elseif prefix == nil or prefix == "" then
  prefix = default_prefix
end

if mode() == "load" then
  if env_prefix == "" then
    LmodError("slurm/23.11-resolute: SLURM_INSTALL_PREFIX is set but empty; " ..
      "set it to the Slurm install prefix, or unset it to use " .. default_prefix)
  end
  if not exists(pathJoin(prefix, "bin", "sinfo")) then
    LmodError("slurm/23.11-resolute: " .. prefix .. " holds no Slurm (no bin/sinfo); " ..
      "set SLURM_INSTALL_PREFIX to the directory where Slurm's view/ was extracted")
  end
end

-- Prepended in reverse, so bin/ comes first and lib/ before lib64/.
prepend_path("PATH", pathJoin(prefix, "sbin"))
prepend_path("PATH", pathJoin(prefix, "bin"))
prepend_path("LD_LIBRARY_PATH", pathJoin(prefix, "lib64"))
prepend_path("LD_LIBRARY_PATH", pathJoin(prefix, "lib"))
prepend_path("MANPATH", pathJoin(prefix, "share", "man"))
setenv("SLURM_ROOT", prefix)
-- pushenv restores the previous value on unload.
pushenv("SLURM_CONF", os.getenv("SLURM_CONF") or "/etc/slurm/slurm.conf")
