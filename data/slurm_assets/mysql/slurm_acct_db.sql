-- The Slurm accounting database and its user, for slurmdbd (StorageLoc=slurm_acct_db).
-- Run as the database administrator, after replacing @DB_PASSWORD@ with the password written to
-- slurmdbd.conf (slurm_install.sh --full-init prints the command):
--   sed 's/@DB_PASSWORD@/secret/' slurm_acct_db.sql | mysql -u root
-- slurmdbd creates its tables itself on first start.
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '@DB_PASSWORD@';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
