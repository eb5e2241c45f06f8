DROP TABLE session_ships;
DROP TABLE ships;
