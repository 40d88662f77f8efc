"""Where readings come from: the sensor API, its simulator and the Kafka producer (topic RawSensorData)."""
