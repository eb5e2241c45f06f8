DROP INDEX ships_warm;
ALTER TABLE ships DROP COLUMN warm;
